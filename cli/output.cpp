#include "cli/output.hpp"

#include "mesh/domain/clock.hpp"
#include "mesh/domain/log.hpp"

#include <cctype>
#include <cstdio>
#include <iostream>
#include <string_view>
#include <yaml-cpp/yaml.h>

namespace polymesh::cli {

namespace {

const char* code_of(color c) {
  switch (c) {
  case color::red: return "\033[31m";
  case color::green: return "\033[32m";
  case color::yellow: return "\033[33m";
  case color::blue: return "\033[34m";
  case color::gray: return "\033[90m";
  case color::bold: return "\033[1m";
  case color::none: return "";
  }
  return "";
}

std::string wrap(const std::string& text, color c, bool on) {
  if (!on || c == color::none) return text;
  return std::string{code_of(c)} + text + "\033[0m";
}

/// True when YAML would read `s` unquoted as something other than this
/// string (a number, bool or null), so it must be quoted.
bool needs_quotes(const std::string& s) {
  if (s.empty()) return true;
  // YAML 1.1 reads many a text that starts so as something else: `010`
  // (8), `0x1F`, `+5`, `1_000`, `.inf`, a date or a timestamp.
  if (std::string_view{"0123456789+-."}.find(s.front()) != std::string_view::npos)
    return true;
  auto j = json::parse(s, nullptr, false);
  if (!j.is_discarded() && !j.is_string()) return true;
  std::string lower;
  for (char c : s)
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (auto* word : {"~", "null", "true", "false", "yes", "no", "on", "off", "y", "n"})
    if (lower == word) return true;
  return false;
}

/// True when `s` holds a character yaml-cpp writes as it is but a YAML
/// parser would not read back: U+0085, U+2028 and U+2029, which YAML reads
/// as line breaks (and folds, in a plain or a quoted scalar), and DEL, which
/// it does not allow in a document.
bool needs_escapes(const std::string& s) {
  auto at = [&](size_t i) { return i < s.size() ? static_cast<unsigned char>(s[i]) : 0; };
  for (size_t i = 0; i < s.size(); ++i) {
    if (at(i) == 0x7f) return true;
    if (at(i) == 0xc2 && at(i + 1) == 0x85) return true;
    if (at(i) == 0xe2 && at(i + 1) == 0x80 && (at(i + 2) == 0xa8 || at(i + 2) == 0xa9))
      return true;
  }
  return false;
}

/// Writes a key or a string value so that it reads back as this string.
void emit_string(YAML::Emitter& out, const std::string& s) {
  if (needs_escapes(s))
    // yaml-cpp escapes these only along with every other non-ASCII
    // character, and only in this one scalar.
    out << YAML::EscapeNonAscii << YAML::DoubleQuoted << s;
  else if (needs_quotes(s))
    out << YAML::DoubleQuoted << s;
  else
    out << s;
}

void emit_yaml(YAML::Emitter& out, const json& j) {
  switch (j.type()) {
  case json::value_t::object:
    out << YAML::BeginMap;
    for (auto& [k, v] : j.items()) {
      // A key YAML reads as a number or bool (a label `on`, a param `010`)
      // would read back as another key.
      out << YAML::Key;
      emit_string(out, k);
      out << YAML::Value;
      emit_yaml(out, v);
    }
    out << YAML::EndMap;
    return;
  case json::value_t::array:
    out << YAML::BeginSeq;
    for (auto& v : j)
      emit_yaml(out, v);
    out << YAML::EndSeq;
    return;
  case json::value_t::null: out << YAML::Null; return;
  case json::value_t::string: emit_string(out, j.get_ref<const std::string&>()); return;
  case json::value_t::boolean: out << j.get<bool>(); return;
  case json::value_t::number_integer: out << j.get<int64_t>(); return;
  case json::value_t::number_unsigned: out << j.get<uint64_t>(); return;
  case json::value_t::number_float: out << j.get<double>(); return;
  default: out << j.dump(); return;
  }
}

/// Display width of UTF-8 text: code points, not bytes.
size_t width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s)
    n += (c & 0xC0) != 0x80;
  return n;
}

} // namespace

void printer::emit(const json& j) const {
  if (s_.output == output_format::yaml)
    std::cout << to_yaml(j) << '\n';
  else
    std::cout << j.dump(2, ' ', false, json::error_handler_t::replace) << '\n';
}

void printer::table(const std::vector<std::string>& header,
                    const std::vector<std::vector<std::string>>& rows,
                    int status_column) const {
  std::vector<size_t> widths(header.size(), 0);
  for (size_t i = 0; i < header.size(); ++i)
    widths[i] = width(header[i]);
  for (auto& row : rows)
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i)
      widths[i] = std::max(widths[i], width(row[i]));
  auto line = [&](const std::vector<std::string>& row, bool is_header) {
    std::string out;
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      auto text = row[i];
      bool last = i + 1 == row.size();
      auto pad = last ? std::string{} : std::string(widths[i] - width(text) + 2, ' ');
      if (is_header)
        out += paint(text, color::bold) + pad;
      else if (static_cast<int>(i) == status_column)
        out += paint(text, status_color(text)) + pad;
      else
        out += text + pad;
    }
    std::cout << out << '\n';
  };
  line(header, true);
  for (auto& row : rows)
    line(row, false);
}

void printer::fields(const std::vector<std::pair<std::string, std::string>>& kv) const {
  size_t w = 0;
  for (auto& [k, v] : kv)
    w = std::max(w, k.size() + 1);
  for (auto& [k, v] : kv) {
    auto value = (k == "status" || k == "skadi_status") ? paint(v, status_color(v)) : v;
    // A value of several lines (a result, an error) keeps to its column.
    if (auto last = value.find_last_not_of('\n'); last != std::string::npos)
      value.erase(last + 1);
    for (auto at = value.find('\n'); at != std::string::npos;
         at = value.find('\n', at + 1))
      value.insert(at + 1, std::string(w + 2, ' '));
    std::cout << paint(k + ":", color::bold) << std::string(w - k.size() - 1 + 2, ' ')
              << value << '\n';
  }
}

std::string printer::paint(const std::string& text, color c) const {
  return wrap(text, c, s_.color_stdout);
}

std::string printer::paint_err(const std::string& text, color c) const {
  return wrap(text, c, s_.color_stderr);
}

color printer::status_color(const std::string& status) {
  if (status == "success" || status == "online" || status == "ok" || status == "ready" ||
      status == "yes" || status == "active")
    return color::green;
  if (status == "error" || status == "offline" || status == "failed") return color::red;
  if (status == "canceled" || status == "draining" || status == "created" ||
      status == "waiting")
    return color::yellow;
  if (status == "running" || status == "pending") return color::blue;
  if (status == "deregistered" || status == "revoked" || status == "expired")
    return color::gray;
  return color::none;
}

void spinner::update(const std::string& text) {
  if (!on_ || held_) return;
  static const char* frames[] = {"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"};
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::steady_clock::now() - started_)
                  .count();
  std::cerr << "\r\033[2K" << frames[frame_++ % 10] << ' ' << text << " (" << secs << "s)"
            << std::flush;
  shown_ = true;
}

void spinner::clear() {
  if (on_ && shown_) std::cerr << "\r\033[2K" << std::flush;
  shown_ = false;
}

std::string to_yaml(const json& j) {
  YAML::Emitter out;
  emit_yaml(out, j);
  return out.c_str();
}

std::string visible(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    auto next = i + 1 < s.size() ? static_cast<unsigned char>(s[i + 1]) : 0;
    char code[16];
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) {
      std::snprintf(code, sizeof code, "\\x%02x", c);
      out += code;
    } else if (c == 0xc2 && next >= 0x80 && next <= 0x9f) {
      std::snprintf(code, sizeof code, "\\u%04x", next);
      out += code;
      ++i;
    } else if (auto mark = layout_mark(s, i)) {
      std::snprintf(code, sizeof code, "\\u%04x", mark);
      out += code;
      i += 2;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string cell(const json& j) {
  if (j.is_null()) return "-";
  if (j.is_string())
    return j.get<std::string>().empty() ? "-" : visible(j.get<std::string>());
  // JSON escapes C0 characters but not C1 ones (U+0080..U+009F).
  return visible(j.dump(-1, ' ', false, json::error_handler_t::replace));
}

std::string age(const json& rfc3339) {
  if (!rfc3339.is_string()) return "-";
  auto t = parse_rfc3339(rfc3339.get<std::string>());
  if (!t) return rfc3339.get<std::string>();
  auto s = std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now() - *t)
               .count();
  if (s < 0) s = 0;
  if (s < 120) return std::to_string(s) + "s ago";
  if (s < 7200) return std::to_string(s / 60) + "m ago";
  if (s < 172800) return std::to_string(s / 3600) + "h ago";
  return std::to_string(s / 86400) + "d ago";
}

std::string labels_text(const json& labels) {
  std::string out;
  if (!labels.is_object()) return "-";
  for (auto& [k, v] : labels.items()) {
    if (!out.empty()) out += ",";
    out += k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out.empty() ? "-" : out;
}

} // namespace polymesh::cli
