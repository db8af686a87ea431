"""Tree tools: export and render the search trees any tree search writes."""
