#include "mesh/domain/error.hpp"

#include <caf/deep_to_string.hpp>
#include <caf/make_message.hpp>

namespace polymesh {

const char* to_string(errc code) {
  switch (code) {
  case errc::none: return "none";
  case errc::invalid_argument: return "invalid_argument";
  case errc::invalid_selector: return "invalid_selector";
  case errc::unauthenticated: return "unauthenticated";
  case errc::forbidden: return "forbidden";
  case errc::not_found: return "not_found";
  case errc::illegal_transition: return "illegal_transition";
  case errc::conflict: return "conflict";
  case errc::payload_too_large: return "payload_too_large";
  case errc::unavailable: return "unavailable";
  case errc::store_failure: return "store_failure";
  case errc::internal: return "internal";
  case errc::method_not_allowed: return "method_not_allowed";
  case errc::uri_too_long: return "uri_too_long";
  case errc::header_too_large: return "header_too_large";
  case errc::precondition_failed: return "precondition_failed";
  case errc::held_by_other_session: return "held_by_other_session";
  case errc::name_in_use: return "name_in_use";
  }
  return "internal";
}

caf::error make_error(errc code, std::string message, std::string field,
                      int64_t position) {
  return caf::error{static_cast<uint8_t>(code), error_category,
                    caf::make_message(std::move(message), std::move(field), position)};
}

namespace {

bool is_ours(const caf::error& err) {
  return err.category() == error_category &&
         err.context().match_elements<std::string, std::string, int64_t>();
}

} // namespace

errc code_of(const caf::error& err) {
  if (!err) return errc::none;
  return err.category() == error_category ? static_cast<errc>(err.code())
                                          : errc::internal;
}

std::string message_of(const caf::error& err) {
  if (is_ours(err)) return err.context().get_as<std::string>(0);
  return caf::to_string(err);
}

std::string field_of(const caf::error& err) {
  return is_ours(err) ? err.context().get_as<std::string>(1) : std::string{};
}

int64_t position_of(const caf::error& err) {
  return is_ours(err) ? err.context().get_as<int64_t>(2) : -1;
}

int http_status(errc code) {
  switch (code) {
  case errc::none: return 200;
  case errc::invalid_argument:
  case errc::invalid_selector: return 400;
  case errc::unauthenticated: return 401;
  case errc::forbidden:
  case errc::held_by_other_session: return 403;
  case errc::name_in_use: return 409;
  case errc::not_found: return 404;
  case errc::illegal_transition:
  case errc::conflict: return 409;
  case errc::payload_too_large: return 413;
  case errc::unavailable: return 503;
  case errc::store_failure:
  case errc::internal: return 500;
  case errc::method_not_allowed: return 405;
  case errc::uri_too_long: return 414;
  case errc::header_too_large: return 431;
  case errc::precondition_failed: return 412;
  }
  return 500;
}

} // namespace polymesh
