"""Gateway: audio over WebSockets (Twilio Media Streams, hopline's own protocol) in, transcripts back out."""
