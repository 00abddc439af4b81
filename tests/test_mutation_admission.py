"""What the mutation run of control/ws_admission.py found unpinned (scripts/mutation.sh
ws-admission; docs/mutation.md, fourth session)."""
