"""ATOM's core: everything that is not drawing. No streamlit import anywhere in this package."""
