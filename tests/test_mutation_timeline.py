"""What the mutation run of frame/timeline.py found unpinned (scripts/mutation.sh timeline;
docs/mutation.md, fourth session): the show timeline's details its other tests did not check."""
