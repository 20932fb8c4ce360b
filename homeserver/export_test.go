package homeserver

// HoldRelay makes the process stop applying other processes' news until
// release is called, as a busy process lags behind: what arrives meanwhile
// is applied, in order, after release.
func (s *Server) HoldRelay() (release func()) {
	s.relay.gate.Lock()
	return s.relay.gate.Unlock
}
