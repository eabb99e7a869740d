"""Conversations, messages and runs on disk: the HistoryStore protocol and its backends.

Nothing outside this package knows a file name, a shard or a lock."""
