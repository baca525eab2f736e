"""Outgoing mail: templates (text + HTML), the SMTP and log transports, the background outbox."""
