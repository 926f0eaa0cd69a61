"""Built-in tiny hybrid video VLM and procedural long-video QA (the embedded default)."""
