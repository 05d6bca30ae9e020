"""The LLM teacher: the two-step item and user prompts run through TeacherClient, in parallel."""
from __future__ import annotations

import concurrent.futures
from typing import Callable, Sequence, TypeVar

from absl import logging

from sidjax.data.corpus import ItemText, UserText
from sidjax.data.dataset import RecDataset
from sidjax.teacher import prompts
from sidjax.teacher.client import TeacherClient
from sidjax.utils.progress import progress

T = TypeVar("T")


def _item_job(client: TeacherClient, dataset: RecDataset, item_sids: Sequence[str], item_id: int, bounds: prompts.Bounds) -> ItemText | None:
    item, sid = dataset.items[item_id], item_sids[item_id]
    analysis = client.ask(prompts.item_analysis_messages(item, bounds), prompts.check_item_analysis(bounds))
    if analysis is None:
        return None
    narrative = client.ask(
        prompts.item_narrative_messages(item, sid, analysis, bounds),
        prompts.check_item_narrative(item, sid, bounds, prompts.ITEM_NARRATIVE_SENTENCES),
    )
    if narrative is None:
        return None
    return ItemText(item=item_id, sid=sid, analysis=analysis, narrative=narrative, source=f"llm:{client.settings.model}")


def _user_job(client: TeacherClient, dataset: RecDataset, item_sids: Sequence[str], split_name: str, row: int,
              bounds: prompts.Bounds, explain_target: bool) -> UserText | None:
    split = dataset.splits[split_name]
    history = split.history[row, : split.history_len[row]].tolist()
    target = int(split.target[row])
    titles = [dataset.items[h].title for h in history]
    h_sids = [item_sids[h] for h in history]
    t_title, t_sid = dataset.items[target].title, item_sids[target]
    shown, shown_title, shown_sid = (dataset.items[target], t_title, t_sid) if explain_target else (None, None, None)
    reasoning = client.ask(
        prompts.user_reasoning_messages([dataset.items[h] for h in history], h_sids, shown, shown_sid, bounds),
        prompts.check_user_reasoning(titles, h_sids, shown_title, shown_sid, bounds),
    )
    if reasoning is None:
        return None
    narrative = client.ask(
        prompts.user_narrative_messages(titles, h_sids, t_title, t_sid, reasoning, bounds,
                                        analyst_saw_target=explain_target),
        prompts.check_user_narrative(titles, h_sids, t_title, t_sid, bounds),
    )
    if narrative is None:
        return None
    return UserText(
        split=split_name, index=row, user=int(split.users[row]), target=target,
        reasoning=reasoning, narrative=narrative, source=f"llm:{client.settings.model}",
    )


def _run_parallel(jobs: Sequence[Callable[[], T | None]], workers: int, desc: str) -> list[T]:
    """Run jobs with at most `workers` in flight; the first error cancels what has not started."""
    results: list[T] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(job) for job in jobs]
        try:
            for future in progress(concurrent.futures.as_completed(futures), desc=desc, total=len(futures)):
                result = future.result()
                if result is not None:
                    results.append(result)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


def write_llm(
    client: TeacherClient,
    dataset: RecDataset,
    item_sids: Sequence[str],
    item_ids: Sequence[int],
    user_rows: Sequence[tuple[str, int]],
    bounds: prompts.Bounds,
    explain_target: bool = True,
) -> tuple[list[ItemText], list[UserText]]:
    """Teacher texts for `item_ids` and the samples `(split, row)`; rejected ones are left out (and logged).

    `explain_target` False: the analyst is not shown the next item (`teacher.explain_target`)."""
    workers = client.settings.concurrency
    items = _run_parallel(
        [lambda i=i: _item_job(client, dataset, item_sids, i, bounds) for i in item_ids], workers, "teacher items"
    )
    users = _run_parallel(
        [lambda s=s, r=r: _user_job(client, dataset, item_sids, s, r, bounds, explain_target)
         for s, r in user_rows], workers, "teacher users"
    )
    if len(items) < len(item_ids) or len(users) < len(user_rows):
        logging.warning(
            "teacher: %d/%d items and %d/%d users were rejected after re-asks and are left out",
            len(item_ids) - len(items), len(item_ids), len(user_rows) - len(users), len(user_rows),
        )
    return items, users
