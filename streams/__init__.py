"""Frame sources and mask sinks (video files, RTSP, webcams; MQTT, disk) and the MQTT message schema."""
