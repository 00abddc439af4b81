"""What the mutation run of frame/lookahead.py found unpinned (scripts/mutation.sh lookahead;
docs/mutation.md, fourth session)."""
