// AllowedExports: a view of another catalog that offers only the exports an operator
// listed for one NBD listener (tapdisk-map --nbd 'tcp:0.0.0.0:10809?exports=vm1:web-*').
// A name outside the list is not-found (NBD_REP_ERR_UNKNOWN: a client learns nothing
// about volumes it may not use) and NBD_OPT_LIST shows only listed names.
//
// Patterns are fnmatch(3) globs ("vm1", "web-*", "db-[0-9]"). An export name
// `VOLUME@ro` is allowed if a pattern matches it or VOLUME; so "vm1" allows "vm1" and
// "vm1@ro", and "vm1@ro" allows the read-only export only.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "tapdisk-map/nbd/export_catalog.h"

namespace tapmap::nbd {

// Checks an allow-list as an operator wrote it: at least one pattern, each non-empty
// and made of volume-name characters, '@' and the glob characters *?[]!.
Status ValidateExportPatterns(const std::vector<std::string>& patterns);

// True if export `name` is allowed by `patterns` (see above).
bool ExportAllowed(const std::vector<std::string>& patterns, std::string_view name);

class AllowedExports : public ExportCatalog {
 public:
  // `inner` must outlive this object; `patterns` must be valid (ValidateExportPatterns).
  AllowedExports(ExportCatalog& inner, std::vector<std::string> patterns);

  void Open(const std::string& name, OpenDone done) override;
  void List(ListDone done) override;
  void Describe(const std::string& name, DescribeDone done) override;

  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  Status NotOffered(const std::string& name) const;

  ExportCatalog& inner_;
  const std::vector<std::string> patterns_;
};

}  // namespace tapmap::nbd
