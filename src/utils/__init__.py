"""Small shared helpers: atomic writes, hashing, logging set-up."""
