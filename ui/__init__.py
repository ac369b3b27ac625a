"""Streamlit studio."""
