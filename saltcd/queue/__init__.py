"""The queue of each app/env: the controller (accept, run one request at a time
under a lock), holds (cooldowns, deploy windows), approvals, drift (tags that
moved without a notification), the status views, and the registry lookup of
the digest a tag points to."""
