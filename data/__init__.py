"""dastudy package."""
