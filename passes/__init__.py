"""The child side: passes that do document work, and the runtime that runs them."""
