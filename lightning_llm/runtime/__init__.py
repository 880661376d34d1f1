"""Run plumbing: config -> parts (builders), hardware -> Trainer arguments, what a run leaves behind."""
