"""Plans and usage: daily/monthly limits, counted exactly across sessions and nodes."""
