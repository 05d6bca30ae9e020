"""What a launch leaves for scripts and schedulers: its exit codes and the log file it appends to.

Kept apart from `experiments.launch`, which defines absl flags on import, so tests and wrappers
can read these without defining `--workdir` twice.
"""
LOG_FILE = "launch.log"  # in the workdir: every launch's log lines and each error's traceback
USER_ERROR_EXIT = 2  # an error the user can fix; its one line says how
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped by SIGTERM after saving, relaunch to resume
