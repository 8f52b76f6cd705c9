"""What a finished job's outputs hold (contract A10): line parsers of each row kind (``lines``), bytes into
bounded lines (``chunks``), the streaming accumulator and its ``results`` map (``summary``), the lines of
``failed.jsonl`` and the Gemini key join (``failed``), the price table (``prices``, ``prices.json``) and the
cost estimate (``cost``). Pure code: no I/O but reading a price table; callers feed it what they stream."""
