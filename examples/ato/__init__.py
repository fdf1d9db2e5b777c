"""Account-takeover (ATO) risk on login events: the second example pipeline."""
