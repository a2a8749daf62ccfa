"""Speech to text and text to speech: the audio endpoints over transcription and speech engines."""
