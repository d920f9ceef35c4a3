#pragma once
// <sa/sa.hpp>: the whole public API of sa (link the sa::sa target).

#include <sa/blocking.hpp>
#include <sa/fiber.hpp>
#include <sa/fiber_local.hpp>
#include <sa/runtime.hpp>
#include <sa/this_fiber.hpp>
#include <sa/sync.hpp>
#include <sa/io.hpp>
#include <sa/net.hpp>
#include <sa/paged_region.hpp>
