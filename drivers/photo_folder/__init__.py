"""Clinical photo folder: a camera (or its card, or a phone) drops photos into a folder."""
