"""Tool retrievers (kind ``retriever``): rank the tools of a large pool for a query."""
