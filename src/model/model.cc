// Implemented next.
#include "huginn/model.h"
