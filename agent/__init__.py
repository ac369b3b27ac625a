"""The LangGraph run: state, thin nodes, CLI."""
