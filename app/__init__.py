"""The nmfcore Streamlit app: ``streamlit run app/streamlit_app.py`` from the repository root.

Modules: ``streamlit_app`` (the page: layout only), ``services`` (the only
nmfcore user: registry, loading, fitting, grouping, evaluation, export),
``plots`` (pure plotly figure builders), ``state`` (named session-state
accessors), ``teaching`` (the "how it works" text).
"""
