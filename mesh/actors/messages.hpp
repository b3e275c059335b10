// The messages that flow between meshd's actors and from the HTTP front to
// them. HTTP types never appear here; JSON only as already-validated request
// structs of the wire contract.
//
// Atoms are CAF 0.17 `atom_constant`s (at most 10 characters).
#pragma once

#include "mesh/domain/records.hpp"
#include "mesh/store/store.hpp"
#include "mesh/wire/json.hpp"
#include "routines/assignment/assigner.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <optional>
#include <string>
#include <vector>

namespace polymesh {

// -- atoms ----------------------------------------------------------------------
using admit_atom = caf::atom_constant<caf::atom("admit")>;
using agent_atom = caf::atom_constant<caf::atom("agent")>;
using artifact_atom = caf::atom_constant<caf::atom("artifact")>;
using arm_atom = caf::atom_constant<caf::atom("arm")>;
using assign_atom = caf::atom_constant<caf::atom("assign")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using check_atom = caf::atom_constant<caf::atom("check")>;
using count_atom = caf::atom_constant<caf::atom("count")>;
using create_atom = caf::atom_constant<caf::atom("create")>;
using deliver_atom = caf::atom_constant<caf::atom("deliver")>;
using dequeue_atom = caf::atom_constant<caf::atom("dequeue")>;
using dereg_atom = caf::atom_constant<caf::atom("dereg")>;
using disarm_atom = caf::atom_constant<caf::atom("disarm")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using enqueue_atom = caf::atom_constant<caf::atom("enqueue")>;
using explain_atom = caf::atom_constant<caf::atom("explain")>;
using finish_atom = caf::atom_constant<caf::atom("finish")>;
using fired_atom = caf::atom_constant<caf::atom("fired")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using forget_atom = caf::atom_constant<caf::atom("forget")>;
using held_atom = caf::atom_constant<caf::atom("held")>;
using get_atom = caf::atom_constant<caf::atom("get")>;
using issue_atom = caf::atom_constant<caf::atom("issue")>;
using labels_atom = caf::atom_constant<caf::atom("labels")>;
using lapsed_atom = caf::atom_constant<caf::atom("lapsed")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using logs_atom = caf::atom_constant<caf::atom("logs")>;
using lost_atom = caf::atom_constant<caf::atom("lost")>;
using offer_atom = caf::atom_constant<caf::atom("offer")>;
using poll_atom = caf::atom_constant<caf::atom("poll")>;
using polltmo_atom = caf::atom_constant<caf::atom("polltmo")>;
using progress_atom = caf::atom_constant<caf::atom("progress")>;
using prune_atom = caf::atom_constant<caf::atom("prune")>;
using rank_atom = caf::atom_constant<caf::atom("rank")>;
using recall_atom = caf::atom_constant<caf::atom("recall")>;
using redeliver_atom = caf::atom_constant<caf::atom("redeliver")>;
using refresh_atom = caf::atom_constant<caf::atom("refresh")>;
using register_atom = caf::atom_constant<caf::atom("register")>;
using release_atom = caf::atom_constant<caf::atom("release")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using revoked_atom = caf::atom_constant<caf::atom("revoked")>;
using reserve_atom = caf::atom_constant<caf::atom("reserve")>;
using revoke_atom = caf::atom_constant<caf::atom("revoke")>;
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;
using start_atom = caf::atom_constant<caf::atom("start")>;
using started_atom = caf::atom_constant<caf::atom("started")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using tokens_atom = caf::atom_constant<caf::atom("tokens")>;
using undrain_atom = caf::atom_constant<caf::atom("undrain")>;
using touch_atom = caf::atom_constant<caf::atom("touch")>;
using update_atom = caf::atom_constant<caf::atom("update")>;
using watch_atom = caf::atom_constant<caf::atom("watch")>;
using withdraw_atom = caf::atom_constant<caf::atom("withdraw")>;
using write_atom = caf::atom_constant<caf::atom("write")>;

// -- payloads --------------------------------------------------------------------

/// Who is asking: the authenticated token behind a request.
struct caller {
  std::string token_id;
  token_kind kind = token_kind::reader;
  /// The token's selector scope ("" for none).
  std::string scope;
  /// For agent tokens: the agent and the session the token was issued for.
  std::string agent_id;
  int64_t agent_session = 0;
};

/// Answer to `POST /v1/runs`: the run and whether this call created it.
struct create_result {
  run_record run;
  bool created = true;
  /// Set instead of `run` when the key is held by a run of another scope.
  caf::error refused;
};

/// Answer to an artifact upload: the stored artifact and whether this call
/// stored it (false for an identical repeat).
struct artifact_put {
  artifact_record artifact;
  bool created = true;
};

/// Answer to a long-poll: runs to start and runs whose cancel was requested.
struct poll_result {
  std::vector<run_record> runs;
  std::vector<std::string> cancel;
  /// The agent's record's `held_until` and `lapsed_leases`: the agent is told
  /// that the mesh holds it back (`agents.hold_back_max`).
  std::optional<timestamp> held_until;
  int64_t lapsed_leases = 0;
};

/// A client's wait for a run to change (`GET /v1/runs/{id}?wait=S`): answered
/// with the run once its status is not `while_status` (with none: once it
/// ended), or when `wait_ms` have passed.
struct watch_request {
  std::optional<run_status> while_status;
  int64_t wait_ms = 0;
};

/// Answer to a registration or a token refresh.
struct agent_session_info {
  agent_record agent;
  std::string access_token;
  timestamp token_expires_at{};
};

/// A freshly minted token: the record plus the secret, shown once.
struct issued_token {
  token_record record;
  std::string token;
};

/// Which kind of entity a timer routine fires at.
struct timer_request {
  std::string key;
  timestamp deadline{};
};

using write_batch = std::vector<write>;
using write_outcomes = std::vector<write_outcome>;
/// The answer to `(explain, run id)`.
struct explanation {
  std::vector<candidacy> agents;
  /// The run holding the run's concurrency key; "" when it waits for none.
  std::string key_holder;
  /// While the key is free: the run of the key that goes first, when it is
  /// another; "".
  std::string key_first;
};
using run_list = std::vector<run_record>;
using agent_list = std::vector<agent_record>;
using token_list = std::vector<token_record>;
using artifact_list = std::vector<artifact_record>;
using run_requests = std::vector<wire::run_request>;
using create_results = std::vector<create_result>;
using status_counts = std::vector<std::pair<run_status, int64_t>>;

} // namespace polymesh

// Local-only message types: meshd's actors never leave the process.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::caller)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::create_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::poll_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::watch_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::agent_session_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::issued_token)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::timer_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::run_record)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::agent_record)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::token_record)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::write_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::write_outcomes)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::explanation)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::run_list)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::agent_list)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::token_list)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::log_page)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::artifact_record)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::artifact_list)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::run_requests)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::create_results)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::artifact_blob)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::artifact_put)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::status_counts)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::run_filter)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::run_page)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::label_map)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<polymesh::left_agent>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::timestamp)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::wire::run_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::wire::register_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::wire::token_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::wire::log_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::wire::finish_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(polymesh::artifact_bytes)
