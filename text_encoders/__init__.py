"""text_encoders package."""
