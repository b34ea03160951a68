"""Reports the SDK writes for people: figures (PNG) beside the JSON and Markdown of bench, eval and train."""
