//! # The adapter tests this suite replaced
//!
//! Each adapter's `tests/` once checked shared behaviour on its own. Those
//! tests were deleted; the cases below check the same on every adapter
//! (`t` = coilwork-tokio, `a` = coilwork-async-std on smol and async-std,
//! `b` = coilwork-blocking; `cases::` unless another module is named).
//! What stayed in an adapter tests its own API: its start/stop helpers,
//! `bind`/`local_addr`/`server_close`/`AlreadyServing`, the port-in-use
//! error, `serve_line` on a custom line, a missing port's
//! error, `TlsServerConfig`'s default, PEM files, and runtime specifics
//! (`Send` futures, no executor, no async runtime, blocking's poll wake).
//!
//! | deleted adapter test | now covered by |
//! |---|---|
//! | t/b `tcp::fc16_fc3_fc15_fc1_round_trips`, a `tcp::round_trips` | `bit_functions`, `register_functions`, `one_exception_per_class` |
//! | t/b `tcp::pipelined_requests_answered_in_order`, a `tcp::pipelining` | `pipelined_requests_in_one_write` |
//! | t/b `tcp::request_written_one_byte_at_a_time`, a `tcp::one_byte_at_a_time` | `request_one_byte_at_a_time` |
//! | t/b `tcp::bad_protocol_id_closes_the_connection`, a `tcp::bad_protocol_id` | `bad_protocol_id_closes_the_connection` |
//! | t `tcp::two_hundred_concurrent_clients`, a `tcp::hundred_clients`, b `tcp::hundred_concurrent_clients` | `concurrent_clients` |
//! | t/b `tcp::max_connections_refuses_new_clients`, a `tcp::max_connections_refused` | `max_connections_refuses_the_next` |
//! | t/b `tcp::evict_oldest_makes_room`, a `tcp::evict_oldest` | `max_connections_evicts_the_oldest` |
//! | t/b `tcp::partial_frame_timeout_drops_a_stalled_client`, a `tcp::partial_frame_timeout` | `partial_frame_timeout` |
//! | t `tcp::partial_frame_after_an_answered_request_times_out`, a `tcp::partial_frame_timeout_after_traffic` | `partial_frame_timeout_after_traffic` (new) |
//! | t `tcp::idle_timeout_after_answers_waited_for_the_client` | `idle_timeout_after_answers_waited_for_the_client` (new, every adapter) |
//! | t/b `tcp::idle_timeout_closes_a_quiet_connection`, a `tcp::idle_timeout` | `idle_timeout`, `buffers_released_and_reallocated` (new: idle after a buffer release) |
//! | a `tcp::idle_timeout_moves_with_traffic`, b `tcp::idle_timeout_is_pushed_back_by_input_then_closes_the_blocked_thread` | `idle_timeout` (a busy client outlives two timeouts, the idle one is closed) |
//! | t/a/b `tcp::buffers_released_and_reallocated` | `buffers_released_and_reallocated` (new) |
//! | b `tcp::buffer_cap_closes_a_connection_holding_too_much` | `buffer_cap_closes_a_connection_holding_too_much` (new) |
//! | t/b `tcp::graceful_shutdown_answers_the_request_in_flight`, a `tcp::graceful_shutdown_in_flight`, a `tcp::shutdown_closes_silent_connections` | `graceful_shutdown_with_a_request_in_flight` (now with a client that never sent a byte) |
//! | t/b `tcp::writes_of_one_client_seen_by_another`, a `tcp::writes_seen_by_another_client` | `writes_seen_by_another_client` |
//! | t/b `tcp::allow_list_refuses_other_ips`, a `tcp::allow_list` | `allow_list` |
//! | t `rtu_over_tcp::rtu_frames_over_tcp_pipelined`, b `tcp::rtu_over_tcp`, a `tcp::rtu_framing_over_tcp` | `rtu_and_ascii_over_tcp` |
//! | a `tcp::delivery_delay` | `delivery::delivery_delay_holds_the_answer_back` |
//! | t `udp::udp_round_trip_and_malformed_datagram_counted`, a `udp::round_trip_and_malformed_counted`, b `udp::udp_round_trip_and_malformed_datagram_counted` | `udp_round_trip_and_malformed_datagram` (now counting received and answered), `udp_answers_go_to_their_sender` |
//! | t/b `udp::a_hooks_delivery_split_sends_two_datagrams`, a `udp::delivery_split_sends_two_datagrams` | `delivery::udp_delivery_split_sends_two_datagrams` (new) |
//! | t `udp::a_stop_cuts_a_delivery_delay_short` | `delivery::udp_stop_cuts_a_delivery_pause_short` (new) |
//! | t/a `serial::rtu_on_a_pty_with_line_silence`, b `serial::rtu_round_trip_over_socat_with_line_silence` | `serial_rtu_round_trip`, `serial_rtu_frame_cut_by_silence_is_dropped` (new) |
//! | t `serial_socat::rtu_write_then_read_through_socat` | `serial_rtu_round_trip` (now with another unit id and an exception frame) |
//! | t/a `serial::ascii_on_a_pipe`, b `serial::ascii_on_a_socket_pair`, t `serial_socat::ascii_write_then_read_through_socat` | `serial_ascii_round_trip` (now 7 data bits, a frame in pieces, a bad LRC) |
//! | t/a/b `serial::local_echo_is_dropped`, t `serial_socat::local_echo_through_the_line_is_not_a_request` | `serial_local_echo_is_dropped` (now an echo in two pieces and one glued to the next request) |
//! | t `serial_socat::broadcast_write_is_applied_and_not_answered` | `serial_broadcast_is_silent` (now FC16 and a broadcast read) |
//! | t `serial_socat::unit_zero_is_ignored_without_broadcast_enable` | `serial_unit_zero_without_broadcast_is_ignored` (new) |
//! | t/a `serial::delivery_split_pauses_the_line`, b `serial::a_hooks_delivery_split_pauses_the_line` | `delivery::serial_delivery_split_pauses_the_line` (new) |
//! | t `serial::a_stop_cuts_a_delivery_delay_short` | `delivery::serial_stop_cuts_a_delivery_pause_short` (new) |
//! | t/b `tls::client_with_role_writes_and_reads_over_tls_1_3_and_1_2`, a `tls::client_with_role_writes_and_reads` | `tls_role_reaches_the_authorizer` (now TLS 1.3 and 1.2, two requests in one TLS write) |
//! | t/b `tls::viewer_gets_exception_01_for_writes_but_may_read`, a `tls::viewer_gets_exception_01_for_writes` | `tls_role_denied_writes` |
//! | t/b `tls::client_without_certificate_never_reaches_the_engine`, a `tls::client_without_certificate_is_refused` | `tls_client_without_certificate_is_refused` |
//! | t/b `tls::client_certificate_from_another_ca_is_refused`, a `tls::certificate_from_another_ca_is_refused` | `tls_certificate_from_another_ca_is_refused` |
//! | t/b `tls::role_extension_twice_or_not_a_utf8_string_is_refused`, a `tls::invalid_role_extension_is_refused` | `tls_invalid_role_extension_is_refused` (new) |
//! | t/b `tls::certificate_without_role_is_served_with_no_role`, a `tls::certificate_without_role_has_no_role` | `tls_certificate_without_role_has_no_role` (new) |
//! | t/a/b `tls::server_only_mode_serves_a_client_without_certificate` | `tls_server_only_serves_a_client_without_certificate` (new); a/b `tls::tls_config_is_the_one_given` keeps the accessor |
//! | t/a/b `tls::graceful_shutdown_answers_the_request_in_flight` | `tls_graceful_shutdown_with_a_request_in_flight` (now requiring a clean `close_notify`) |
//! | t/a/b `tls::handshake_timeout_closes_a_silent_client` | `tls_handshake_timeout_closes_a_silent_client` (new) |
//! | a/b `tls::a_stop_cuts_a_handshake_in_progress` | `tls_stop_cuts_a_handshake_in_progress` (new) |
//! | a `interop::pymodbus_over_tcp`, b `interop::pymodbus_client_over_tcp` | `pymodbus::pymodbus_over_tcp` (new) |
//! | b `interop::pymodbus_client_rtu_over_tcp` | `pymodbus::pymodbus_rtu_over_tcp` (new) |
//! | a `interop::pymodbus_over_udp`, b `interop::pymodbus_client_over_udp` | `pymodbus::pymodbus_over_udp` (new) |
//! | t `serial_socat::auto_open_waits_for_a_port_that_appears_later`, b `serial::auto_open_waits_for_the_port_and_reopens_it` | `serial_auto_open_waits_for_the_port_and_reopens_it` (new, every adapter) |
