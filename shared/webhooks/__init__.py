"""Gemini API webhooks (contract A9): verifying deliveries, and taking them as nudges — the batch is
fetched at once and applied as a tick's poll of it would be."""
