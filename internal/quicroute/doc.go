// Package quicroute holds the pure building blocks the supervisor needs to
// share one UDP socket between per-proxy worker processes serving HTTP/3:
//
//   - ParseInitial decrypts a client Initial packet (RFC 9000 §17.2.2,
//     RFC 9001 §5; QUIC v1 and v2, RFC 9369) and returns its CRYPTO frames;
//     an Assembler reassembles the ClientHello from the frames of several
//     Initial packets, in any order, so the SNI can pick the worker.
//   - A connection-id scheme (CIDLen, Generator, DecodeWorker) lets workers
//     choose server connection ids from which the supervisor, holding the
//     same key, recovers the worker id.
//   - Router combines both: it maps each datagram to a worker, buffers the
//     few datagrams of a new connection until its SNI is known, and
//     remembers the client-chosen ids of connections it has routed.
//
// Nothing here touches sockets or processes. The caller reads datagrams,
// asks Router.Route, and forwards.
//
// # Why the Initial must be decrypted
//
// A client's first packets carry a destination connection id the client
// picked at random, so nothing in the clear says which worker should get
// them. The Initial keys are derived from that id and a salt published in
// the RFC, so anyone — including us — can decrypt the Initial and read the
// ClientHello. Clients make this harder on purpose: quic-go (like Chrome)
// cuts the ClientHello into several CRYPTO frames and shuffles them, and a
// post-quantum key share (X25519MLKEM768, ~1.2 KB) pushes the ClientHello
// over two Initial packets that may arrive in either order, duplicated, or
// only after a retransmission. The Router buffers them until the bytes
// [0, 4+length) of the ClientHello are contiguous.
//
// # What the caller does with each outcome
//
//   - Forward: send the datagram to Decision.Worker.
//   - NewConnection: choose the worker by Decision.SNI, call Router.Bind
//     (before the next Route call, so retransmissions follow), then forward
//     every datagram in Decision.Buffered, which includes this one. For an
//     SNI no worker serves, either call Router.Refuse (later datagrams of
//     that connection are dropped cheaply and the client times out, after
//     quic-go's 5 s handshake idle timeout by default), or — friendlier —
//     send the connection to any worker whose quic-go GetConfigForClient
//     refuses the name: quic-go then answers with a CONNECTION_CLOSE
//     (CRYPTO_ERROR) under the Initial keys, which the supervisor cannot do
//     without a TLS stack. Dropping is the documented default.
//   - Pending: the router holds the datagram (or discarded a duplicate);
//     nothing to do.
//   - Drop: discard; Decision.Err says why. A *VersionError (errors.Is
//     ErrUnsupportedVersion) carries what a Version Negotiation packet
//     needs: the caller may answer with AppendVersionNegotiation when the
//     datagram is at least 1200 bytes (RFC 9000 §6.1, §14.1: smaller ones
//     could be used for amplification), or drop it.
//
// # Limits
//
// Everything a peer can make the router keep is bounded: per new
// connection MaxInitialPackets distinct Initial packets, MaxCryptoBytes of
// CRYPTO data and 64 KiB (64 datagrams) of buffered datagrams; across
// connections RouterConfig.MaxPending, MaxBound and MaxBufferedBytes, the
// oldest entries evicted first and everything expiring after a timeout.
// A connection that breaks a per-connection bound, or sends conflicting
// CRYPTO data or an invalid ClientHello, is refused like Router.Refuse.
//
// # Fuzzing
//
// The fuzz targets feed ≥1200-byte ciphertexts, which Go's input
// minimizer cannot shrink (its byte-subset pass is quadratic); run them
// with a short minimization budget, e.g.
//
//	go test ./internal/quicroute -run '^$' -fuzz FuzzRoute -fuzztime 60s -fuzzminimizetime 2s
package quicroute
