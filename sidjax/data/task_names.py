"""The SFT task names and which stage and prompt style each belongs to (no jax: the config schema reads them)."""

# Stage-1 alignment tasks, in the papers' numbering.
TITLE2SID = "title2sid"  # 1
SID2TITLE = "sid2title"  # 2
SIDHIS2TITLE = "sidhis2title"  # 3
TITLEHIS2TITLE = "titlehis2title"  # 4
SIDHIS2SID = "sidhis2sid"  # 5, the main task
TITLEHIS2SID = "titlehis2sid"  # 6
ITEM_ENRICH = "item_enrich"  # 7
USER_NARRATIVE = "user_narrative"  # 8
SIDSEQ = "sidseq"  # sid_sequence style: a user's train sequence, loss on every next item
# Stage-2 reasoning activation.
REASONING = "reasoning"

SID_SEQUENCE_STYLE = "sid_sequence"
PAPERS_STYLE = "papers"
PROMPT_STYLES = ("chat", PAPERS_STYLE, SID_SEQUENCE_STYLE)
CHAT_STYLES = ("chat", PAPERS_STYLE)  # prompts in chat turns (reasoning needs one of these)

TASKS = (
    TITLE2SID,
    SID2TITLE,
    SIDHIS2TITLE,
    TITLEHIS2TITLE,
    SIDHIS2SID,
    TITLEHIS2SID,
    ITEM_ENRICH,
    USER_NARRATIVE,
    SIDSEQ,
    REASONING,
)
ITEM_TASKS = (TITLE2SID, SID2TITLE, ITEM_ENRICH)
CORPUS_TASKS = (ITEM_ENRICH, USER_NARRATIVE, REASONING)
STAGE_TASKS = {
    "sft": (TITLE2SID, SID2TITLE, SIDHIS2TITLE, TITLEHIS2TITLE, SIDHIS2SID, TITLEHIS2SID, ITEM_ENRICH, USER_NARRATIVE),
    "reason_sft": (REASONING,),
}
SEQUENCE_ONLY_TASKS = (SIDSEQ,)
CHAT_ONLY_TASKS = (REASONING,)
REPLAY = "replay"
