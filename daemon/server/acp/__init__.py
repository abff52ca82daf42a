"""The ACP front door, `acpd acp`: any ACP client uses the daemon's conversations.

`door.FrontDoor` speaks ACP as an agent on one stream and the daemon's socket API behind it;
`session.Attachment` follows one conversation for one ACP session; `link` holds the daemon
connections; `main` runs it on stdin/stdout. The translation of events into ACP updates is
`protocol.translate`, shared with every front end.
"""
