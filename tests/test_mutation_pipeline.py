"""What the mutation runs of frame/pipeline.py, cursor.py, job_timeline.py and timelapse.py found
unpinned (scripts/mutation.sh pipeline, job-timeline; docs/mutation.md, fourth session)."""
