"""Did it pay: what came of the audiences after they were sent (issue 12)."""
