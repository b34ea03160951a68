"""Reports the SDK writes for people: figures (PNG) beside the JSON and Markdown of bench, eval and train.

Nothing here knows the SDK: `machine` says where numbers were measured, `tables` writes Markdown
tables, `files` the JSON + Markdown pair, `plotting` the figures.
"""
