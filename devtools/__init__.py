"""Development tools: local emulators, the batch-API simulator, the stack launcher and the demo.

Not part of the deploy bundle.
"""
