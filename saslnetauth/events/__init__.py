"""What follows a decision: the one auth-event logger and the commands run on events."""
