"""The absl apps (`python -m experiments.<app>`) and their configs."""
from sidjax.utils import hugepages

hugepages.restart_for(__name__)  # before the app's own imports: glibc reads the tunable at start
