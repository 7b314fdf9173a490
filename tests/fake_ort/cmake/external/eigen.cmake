# Stand-in for ONNX Runtime 1.15's cmake/external/eigen.cmake: eigen is not in
# deps.txt but a URL of its own, downloaded at configure time, and declared
# twice (with a patch for ACL builds, and without): one download all the same.
if (onnxruntime_USE_PREINSTALLED_EIGEN)
    add_library(eigen INTERFACE)
    file(TO_CMAKE_PATH ${eigen_SOURCE_PATH} eigen_INCLUDE_DIRS)
    target_include_directories(eigen INTERFACE ${eigen_INCLUDE_DIRS})
else ()
    if (onnxruntime_USE_ACL)
        FetchContent_Declare(
        eigen
        URL https://gitlab.com/libeigen/eigen/-/archive/d10b27fe37736d2944630ecd7557cefa95cf87c9/eigen-d10b27fe37736d2944630ecd7557cefa95cf87c9.zip
        URL_HASH SHA1=a7a4e5a9b6f0e4e8b6d0a7c2b4f1e9d8c7b6a5f4
        PATCH_COMMAND ${Patch_EXECUTABLE} --ignore-space-change --ignore-whitespace < ${PROJECT_SOURCE_DIR}/patches/eigen/Fix_Eigen_Build_Break.patch
        )
    else()
        FetchContent_Declare(
        eigen
        URL https://gitlab.com/libeigen/eigen/-/archive/d10b27fe37736d2944630ecd7557cefa95cf87c9/eigen-d10b27fe37736d2944630ecd7557cefa95cf87c9.zip
        URL_HASH SHA1=a7a4e5a9b6f0e4e8b6d0a7c2b4f1e9d8c7b6a5f4
        )
    endif()
    FetchContent_Populate(eigen)
    set(eigen_INCLUDE_DIRS  "${eigen_SOURCE_DIR}")
endif()
