// Output helpers of the tapmap CLI: aligned tables for people, JSON for automation.
//
// Convention (documented in tapmap(1)): with --json a command prints exactly one JSON
// document on stdout (JSON Lines, one document per sample, for `stats --watch`); on
// failure that document is {"error": {"code": "<status name>", "message": "..."}}.
// Without --json, results go to stdout as text and errors to stderr as
// "tapmap: <message>".
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace tapmap::cli {

// Key order is kept as inserted so that documents read the same every time.
using Json = nlohmann::ordered_json;

// A table printed with columns padded to their widest cell. Columns flagged numeric
// are right-aligned. Not thread-safe; a value type.
class Table {
 public:
  struct Column {
    std::string title;
    bool numeric = false;
  };
  explicit Table(std::vector<Column> columns);

  // `cells` must have one entry per column (checked: throws std::logic_error).
  void AddRow(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }

  // Header line then one line per row, columns separated by two spaces, no trailing
  // blanks.
  std::string Render() const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// Writes `doc` and a newline to `out`; `pretty` indents by two spaces, else one line.
void PrintJson(std::FILE* out, const Json& doc, bool pretty = true);

// {"error": {"code": "not-found", "message": "..."}}.
Json ErrorJson(const Status& status);

// "yes"/"no".
inline const char* YesNo(bool b) { return b ? "yes" : "no"; }

}  // namespace tapmap::cli
