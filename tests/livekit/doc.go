// Package livekit tests Hearth's LiveKit authorization service against a
// real LiveKit SFU (livekit-server, found at $LIVEKIT_SERVER) with LiveKit's
// Go client SDK. It is a module of its own so that the SDK and its WebRTC
// stack stay out of Hearth's dependencies.
package livekit
