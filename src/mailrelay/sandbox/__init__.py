"""Sandbox accounts: mail is checked and signed like real mail, then captured, never delivered."""
