"""``itool annotate``: build training paths with an agent search over an executable environment."""
