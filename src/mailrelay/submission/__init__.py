"""Policy for mail from authenticated senders and trusted networks (ports 587, 465, 2525, 25)."""
