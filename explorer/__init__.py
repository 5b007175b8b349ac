"""The Gradio explorer: reads the DuckDB store written by the pipeline, never recomputes it."""
