"""Sound that plays the show: features of an audio file or input device on the frame clock,
mapped onto live parameters (unstable.audio.mapping)."""
