// Package rtc holds what MatrixRTC calls need of a homeserver beyond rooms:
// the delayed events scheduler (MSC4140), and, later, the RTC transports
// and the LiveKit authorization service. It uses the room core and the
// store; the client API uses it; it never imports the API layers.
package rtc
