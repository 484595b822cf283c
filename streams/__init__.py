"""Frame sources and mask sinks (video files, RTSP, webcams; MQTT, disk)."""
