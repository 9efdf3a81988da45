// CKvm has only static inline functions; this file gives the target a translation unit.
#include "CKvm.h"
