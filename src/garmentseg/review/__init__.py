"""The review loop: a quality estimate per cutout, the queue of doubtful ones, and the retouch round trip."""
